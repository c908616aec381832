"""Console pages: thin views, each declaring its console role and calling one selector or service."""
