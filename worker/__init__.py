"""News enrichment worker: language, cleaning, entities and near-duplicates for scraped articles."""

__version__ = "0.1.0"
