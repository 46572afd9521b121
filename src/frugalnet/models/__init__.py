"""Reference models built from configs with weights drawn from a seed (no pretrained weights, nothing beyond our
dependencies): CNN-2, a CIFAR ResNet-18, a MobileNetV2-style net, a BERT-shaped encoder and a GPT-shaped decoder
with a KV cache. Each is a plain nn.Module that torch.export can capture; activations are modules, so they can be
swapped (k-WTA), and every GEMM is an nn.Linear/nn.Conv2d, so sparsify_/quantize_ reach it."""
from frugalnet.models.bert import BertEncoder, bert_encoder
from frugalnet.models.cnn import cnn2_output_size, dense_cnn2, sparse_cnn2
from frugalnet.models.gpt import GPTDecoder, gpt_decoder
from frugalnet.models.mobilenet import MobileNetV2, MobileNetV2Config, mobilenet_v2_cifar
from frugalnet.models.resnet import CifarResNet, ResNetConfig, resnet18_cifar
from frugalnet.models.transformer import TransformerConfig

__all__ = ["dense_cnn2", "sparse_cnn2", "cnn2_output_size", "resnet18_cifar", "CifarResNet", "ResNetConfig",
           "mobilenet_v2_cifar", "MobileNetV2", "MobileNetV2Config", "bert_encoder", "BertEncoder", "gpt_decoder",
           "GPTDecoder", "TransformerConfig"]
