"""Energy and carbon accounting: measured where counters exist, clearly estimated where not, modelled per layer.

    from frugalnet.energy import Meter, model_cost, Ledger
    with Meter() as m:                      # RAPL / NVML where readable, else CPU time x W per core ("estimated")
        train()
    cost = model_cost(model, x, training=True)   # dense and effective MACs, bits, bytes, joules (modelled)
"""
from frugalnet.energy.carbon import GridIntensity, available_countries, carbon_grams, grid_intensity
from frugalnet.energy.costmodel import LayerCost, ModelCost, model_cost
from frugalnet.energy.ledger import Factor, Ledger, samples_to_reach
from frugalnet.energy.meter import DEFAULT_CPU_WATTS_PER_CORE, Meter, MeterResult, format_table
from frugalnet.energy.tables import HOROWITZ_45NM, EnergyTable

__all__ = [
    "GridIntensity", "available_countries", "carbon_grams", "grid_intensity",
    "LayerCost", "ModelCost", "model_cost",
    "Factor", "Ledger", "samples_to_reach",
    "DEFAULT_CPU_WATTS_PER_CORE", "Meter", "MeterResult", "format_table",
    "HOROWITZ_45NM", "EnergyTable",
]
