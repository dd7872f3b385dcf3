"""The BigQuery sink: `tables` (the warehouse and `ensure_tables`), `clients` (real BigQuery or an emulator),
`sink` (the write transforms)."""
