"""Chat models behind one interface: prompt (+ image) in, reply text out."""
