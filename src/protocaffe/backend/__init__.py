"""Code generation: emit the module's pieces, render them with Jinja2, format with black."""
