"""flowdeco's implementation; users import from :mod:`flowdeco` and its public submodules."""
