"""Training: a synthetic labelled set, Ultralytics YOLO training, validation, ONNX export, registry push.

``ipsp train`` drives it; it needs the ``train`` extra (ultralytics, torch, onnx).
"""
