"""Serving: export of a best checkpoint (safetensors) and Ray-free prediction from an export."""
