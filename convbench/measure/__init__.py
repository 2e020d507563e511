"""How numbers are taken: clocks and the timing primitive, inputs, error metrics,
the one comparison policy, the sweep runner, the machine's roof, peer comparisons."""
