"""Data in: reading and writing tables (`io`), validation against the config's schema
(`validation`), a first config inferred from a table (`schema`, `pynomaly init`), a series cut
into windows (`series`) and feature preprocessing (`preprocessing`)."""
