"""Audio countermeasures: formats, variants, their cache and how they are served."""
