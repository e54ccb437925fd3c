// Placeholder until helper M's alerts.js (the alerts view `#/alerts` and the count in the header) replaces it.
export function mount(_ctx) {}
