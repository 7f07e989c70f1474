"""One module per benchmark figure. Each has ``NAME``, ``TARGET``, ``measure(quick)`` (the
figure's results, a JSON object) and ``rows(result)`` (its lines of the printed table)."""
