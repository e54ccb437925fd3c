// Placeholder until helper H's map.js (the map view `#/map` with site tabs and the site upload form) replaces it.
export function mount(_ctx) {}
