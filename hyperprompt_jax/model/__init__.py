"""The T5.1.1 network with task conditioning, the encoder-decoder model around it, decoding and losses."""
