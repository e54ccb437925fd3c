// Placeholder until helper A's account.js (sign-in with user and password, user menu, `#/admin`) replaces it.
export function mount(_ctx) {}
