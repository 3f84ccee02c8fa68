"""The runtime: a bundle in, verdicts out. Bundle and manifest, the ONNX Runtime engine,
preprocessing, scoring, the Inspector, overlays and the faster graph variants.

Needs only numpy, OpenCV and ONNX Runtime: it never imports torch (a test checks).
"""
