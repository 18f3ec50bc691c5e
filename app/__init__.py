"""The explorer's Gradio UI: ``ui`` wires components, ``views`` draws records, ``session`` runs generations."""
