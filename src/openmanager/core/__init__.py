"""Pure core: data model, status, rule language, encoding, cursors. No I/O, no imports from the rest."""
