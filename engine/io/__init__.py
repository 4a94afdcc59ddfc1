"""Reading cases and site profiles, and turning bad input into errors that name field and value."""
