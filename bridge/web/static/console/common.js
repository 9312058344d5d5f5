// What every part of the console shares: its state, DOM helpers, formatting, and the API.
//
// Every piece of call data reaches the page through textContent or a property, never through
// HTML parsing: a caption is whatever a caller said, and must not be able to inject markup.

export const DIRECTIONS = ['caller_to_agent', 'agent_to_caller'];
export const RETRY_MS = 3000;
const SLOW_DELAY_MS = 3000; // from here the delay is flagged: the parties are waiting noticeably

export const state = {
  languages: {}, // code -> the language's name in English
  skewMs: 0, // the server's clock minus ours, so durations agree with the server
  calls: new Map(), // sid -> CallSummary, from the latest list
  view: null, // the open call (see call.js)
};

export const byId = (id) => document.getElementById(id);

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// ---- formatting -------------------------------------------------------------------------

export function languageName(code) {
  return (code && state.languages[code]) || code || 'unknown';
}

export function directionLanguages(call, direction) {
  const caller = call.caller_language;
  const agent = call.agent_language;
  return direction === 'caller_to_agent' ? [caller, agent] : [agent, caller];
}

export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return '–';
  const s = Math.max(0, Math.floor(seconds));
  const mm = String(Math.floor((s % 3600) / 60));
  const ss = String(s % 60).padStart(2, '0');
  return s >= 3600 ? `${Math.floor(s / 3600)}:${mm.padStart(2, '0')}:${ss}` : `${mm}:${ss}`;
}

export function formatDelay(ms) {
  if (ms === null || ms === undefined) return '–';
  const text = `${(ms / 1000).toFixed(1)} s`;
  return ms >= SLOW_DELAY_MS ? `${text} (high)` : text;
}

export function isSlow(ms) {
  return typeof ms === 'number' && ms >= SLOW_DELAY_MS;
}

export function formatTime(iso) {
  const date = iso ? new Date(iso) : null;
  return date && !Number.isNaN(date.getTime())
    ? date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
    : '';
}

export function humanReason(reason) {
  return reason ? String(reason).replaceAll('_', ' ') : 'ended';
}

export function callSeconds(call) {
  if (!call.active) {
    if (typeof call.duration_s === 'number') return call.duration_s;
    if (call.ended_at && call.started_at) {
      return (Date.parse(call.ended_at) - Date.parse(call.started_at)) / 1000;
    }
    return null;
  }
  return call.started_at ? (Date.now() + state.skewMs - Date.parse(call.started_at)) / 1000 : null;
}

// ---- talking to the bridge --------------------------------------------------------------

export function setConnection(text) {
  const node = byId('connection');
  if (node.textContent !== text) node.textContent = text; // unchanged text is not re-announced
}

export function announce(text) {
  byId('announce').textContent = text;
}

export const LOGGED_OUT = 'logged out';

// GET a JSON resource of this origin. The HttpOnly admin cookie rides along with every
// same-origin request, so the console's script never sees the token.
export async function api(path) {
  const response = await fetch(path, {
    headers: { Accept: 'application/json' },
    cache: 'no-store',
  });
  if (response.status === 401) {
    // The cookie expired or the token changed: the console page shows the login form again.
    window.location.assign('/console');
    throw new Error(LOGGED_OUT);
  }
  if (!response.ok) {
    const error = new Error(`${path}: HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  const date = Date.parse(response.headers.get('Date') || '');
  // The Date header has whole seconds: only a real clock difference is worth correcting.
  if (Number.isFinite(date) && Math.abs(date - Date.now()) > 2000) state.skewMs = date - Date.now();
  return response.json();
}

export function callPath(sid) {
  return `/api/calls/${encodeURIComponent(sid)}`;
}
