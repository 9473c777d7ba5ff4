"""Analysis: activations, directions, controls, interventions, steering, ridge maps and statistics."""
