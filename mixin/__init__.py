"""Source of the generated alert rules and dashboard; see gen.py."""
