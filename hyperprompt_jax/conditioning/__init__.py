"""Task conditioning: its config, the hypernetworks, prompt and adapter generators, input prompts and closed-form parameter counts."""
