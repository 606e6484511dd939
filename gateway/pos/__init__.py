"""POS sales capture: ESC/POS receipt streams (`escpos`), receipt fields (`fields`), `gateway pos` CLI."""
