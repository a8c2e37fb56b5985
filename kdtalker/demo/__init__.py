"""The web demo: a Gradio app around the inference pipeline (scripts/demo.py starts it)."""
