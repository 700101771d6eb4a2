"""Configuration: the schema (from the roles' argspecs), reading and locating errors, units, the init text."""
