"""Call records: the store, its tables, its writer, migrations and views."""
