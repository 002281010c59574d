"""Image classification: EfficientNet-Lite0 (ImageNet-1k) converted from its .pth to ONNX without
torch, run with onnxruntime. pth reads the weights, convert writes the model, model runs it."""
