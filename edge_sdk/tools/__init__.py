"""Tools around the product: the benchmark and its hardware peaks, the doctor, the demo
and generated part images."""
