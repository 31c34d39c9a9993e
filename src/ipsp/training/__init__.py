"""Training: fine-tune the shipped CenterNet on labelled traffic frames (``finetune``), or train YOLO with Ultralytics.

``ipsp train`` drives both; they need the ``train`` extra (torch, onnx, onnx2torch, ultralytics).
The dataset reading, augmentations and targets (``dataset``, ``augment``, ``targets``) need no torch.
"""
