"""Real projects' schemas, each taken through the README's migration workflow."""
