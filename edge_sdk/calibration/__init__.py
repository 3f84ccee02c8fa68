"""Calibration: map quantiles and the image threshold measured through the graph itself,
the threshold policies, and recalibration of a bundle on new images. Runtime only (no
torch), so a line can be recalibrated on the edge box."""
