"""A simulated EV fleet (vehicles and their meters) for demos and tests, usable against any running engine."""
