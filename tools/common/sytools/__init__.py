"""What the project's Python tools (sy-scale, sy-trace) share."""
