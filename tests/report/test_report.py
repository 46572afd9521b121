import matplotlib.pyplot as plt

from frugalnet.report import Report, format_value, mean_sd


def test_report_writes_markdown_html_and_figures(tmp_path):
    rep = Report("title")
    rep.heading("Section").text("some <text>").table(["a", "b"], [[1, 0.5], ["x", 1234567]], "cap")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    rep.figure(fig, "my plot", "a caption")
    rep.write(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "## Section" in md and "| 1 | 0.5 |" in md and "![a caption](my_plot.png)" in md
    html = (tmp_path / "report.html").read_text()
    assert "some &lt;text&gt;" in html and "<img src='my_plot.png'" in html
    assert (tmp_path / "my_plot.png").stat().st_size > 1000


def test_format_and_mean_sd():
    assert format_value(1234) == "1,234" and format_value(float("nan")) == "n/a"
    m, sd = mean_sd([1.0, 2.0, 3.0])
    assert m == 2.0 and abs(sd - 1.0) < 1e-12
    assert mean_sd([5.0]) == (5.0, 0.0)
