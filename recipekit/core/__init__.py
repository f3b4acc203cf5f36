"""The small pieces every layer uses: errors, the recipe schema's types, paths, safe readers, files written whole, tables, the console, the launch environment."""
