// Placeholder until helper H's charts.js (a robot's telemetry charts, a rollout's guard history) replaces it.
export function robotCharts(_ctx, _container, _deviceId) {}
export function rolloutGuards(_ctx, _container, _rolloutId) {}
