// One open call: its facts (state, duration, languages, delays) and its captions, loaded from
// /api/calls/<sid> and then followed live over the call's server-sent events until it ends.

import { clearCaptions, finalise, onFragment, onSegment } from './captions.js';
import {
  DIRECTIONS,
  LOGGED_OUT,
  RETRY_MS,
  announce,
  api,
  byId,
  callPath,
  callSeconds,
  directionLanguages,
  formatDelay,
  formatDuration,
  humanReason,
  isSlow,
  languageName,
  setConnection,
  state,
} from './common.js';

// How long the stream may lag behind the list in reporting the end (it sends the last
// captions first) before the finished call is reloaded instead.
const END_GRACE_MS = 5000;
export const CALL_ENDED = 'console:call-ended'; // a document event: the list refreshes on it

function renderFacts(view) {
  const call = view.call;
  byId('call-title').textContent = `Call from ${call.caller_number || 'an unknown number'}`;
  const stateLine = byId('call-state');
  stateLine.textContent = call.active ? 'Live' : `Ended: ${humanReason(call.end_reason)}`;
  stateLine.className = call.active ? 'state live' : 'state ended';
  byId('caller-language').textContent = languageName(call.caller_language);
  byId('agent-language').textContent = languageName(call.agent_language);
  DIRECTIONS.forEach((direction) => {
    const [from, to] = directionLanguages(call, direction);
    byId(`langs-${direction}`).textContent = `(${languageName(from)} → ${languageName(to)})`;
  });
  byId('call-duration').textContent = formatDuration(callSeconds(call));
  // An engine that gives no text (the relay) leaves the columns empty: say why, in both.
  document.querySelectorAll('.no-captions').forEach((note) => {
    note.hidden = note.dataset.engine !== call.engine;
  });
}

function setDelay(direction, ms) {
  const node = byId(`delay-${direction}`);
  if (!node) return;
  node.textContent = formatDelay(ms);
  node.classList.toggle('slow', isSlow(ms));
}

function endCall(view, reason) {
  if (view.ended) return;
  view.ended = true;
  if (view.source) view.source.close();
  view.call = { ...view.call, active: false, end_reason: reason || view.call.end_reason };
  DIRECTIONS.forEach((direction) => {
    if (view.lines[direction]) finalise(view.lines[direction]);
  });
  renderFacts(view);
  setConnection('Up to date.');
}

function renderSnapshot(view, detail) {
  view.call = detail;
  renderFacts(view);
  clearCaptions(view);
  const segments = [...(detail.segments || [])];
  segments.sort((a, b) => a.start_ms - b.start_ms || a.seq - b.seq);
  segments.forEach((segment) => onSegment(view, segment));
  const delays = detail.delays || {};
  DIRECTIONS.forEach((direction) => {
    if (direction in delays) setDelay(direction, delays[direction]);
  });
  if (!detail.active) endCall(view, detail.end_reason);
}

async function reload(view) {
  try {
    const detail = await api(callPath(view.sid));
    if (state.view === view) renderSnapshot(view, detail);
  } catch (error) {
    if (state.view === view && error.message !== LOGGED_OUT) endCall(view, undefined);
  }
}

// The list saw the open call end. The stream normally says so itself, after the last
// captions; if it does not within the grace period, the finished call is reloaded.
export function noticeEnded() {
  const view = state.view;
  if (!view || view.ended || view.endNoticed) return;
  view.endNoticed = true;
  window.setTimeout(() => {
    if (state.view === view && !view.ended) reload(view);
  }, view.live ? END_GRACE_MS : 0);
}

function onEnded(view, reason) {
  endCall(view, reason);
  announce(`The call from ${view.call.caller_number || 'an unknown number'} ended.`);
  document.dispatchEvent(new Event(CALL_ENDED));
  // The summary now has the end time and the final duration (captions are complete already).
  api(callPath(view.sid))
    .then((detail) => {
      if (state.view === view) {
        view.call = detail;
        renderFacts(view);
      }
    })
    .catch(() => {});
}

function follow(view) {
  const source = new EventSource(`${callPath(view.sid)}/events`);
  view.source = source;
  const on = (name, handle) =>
    source.addEventListener(name, (event) => {
      if (state.view !== view || view.ended) return; // a stale stream of a call no longer open
      handle(JSON.parse(event.data));
    });
  source.addEventListener('open', () => {
    view.live = true;
    setConnection('Following the call live.');
  });
  on('snapshot', (detail) => renderSnapshot(view, detail));
  on('summary', (summary) => {
    view.call = { ...view.call, ...summary }; // e.g. the agent answered
    renderFacts(view);
  });
  on('fragment', (fragment) => onFragment(view, fragment));
  on('segment', (segment) => {
    onSegment(view, segment);
    if (typeof segment.delay_ms === 'number') setDelay(segment.direction, segment.delay_ms);
  });
  on('delay', (delay) => setDelay(delay.direction, delay.delay_ms));
  on('ended', (ended) => onEnded(view, ended.reason));
  source.addEventListener('error', () => {
    if (state.view !== view || view.ended) return;
    view.live = false;
    if (source.readyState !== EventSource.CLOSED) {
      setConnection('Reconnecting to the live captions…'); // EventSource retries by itself
      return;
    }
    setConnection('Lost the live captions. Retrying…'); // refused (e.g. 503): start over
    window.setTimeout(() => {
      if (state.view === view && !view.ended) openCall(view.sid, false);
    }, RETRY_MS);
  });
}

export function closeCall() {
  const view = state.view;
  if (view && view.source) view.source.close();
  state.view = null;
  byId('call-view').hidden = true;
  byId('no-call').hidden = false;
}

export async function openCall(sid, moveFocus) {
  closeCall();
  const view = {
    sid,
    call: state.calls.get(sid) || { call_sid: sid, active: true }, // until its details arrive
    lines: {}, // direction -> the line still being spoken, if any
    lastSeq: {}, // direction -> the last segment shown (a reconnection replays none twice)
    source: null, // the EventSource while the call is live
    ended: false,
    live: false, // the event stream is open
    endNoticed: false, // the list says the call ended; the stream has not yet
  };
  state.view = view;
  byId('no-call').hidden = true;
  byId('call-view').hidden = false;
  clearCaptions(view);
  DIRECTIONS.forEach((direction) => setDelay(direction, null));
  byId('download-txt').href = `${callPath(sid)}/transcript.txt`;
  byId('download-vtt').href = `${callPath(sid)}/transcript.vtt`;
  renderFacts(view);
  document.querySelectorAll('a.call-link').forEach((link) => {
    if (link.dataset.sid === sid) link.setAttribute('aria-current', 'true');
    else link.removeAttribute('aria-current');
  });
  if (moveFocus) byId('call-title').focus(); // keyboard and screen reader users land on the call
  try {
    const detail = await api(callPath(sid));
    if (state.view !== view) return;
    renderSnapshot(view, detail);
    if (detail.active) follow(view);
  } catch (error) {
    if (state.view !== view || error.message === LOGGED_OUT) return;
    const missing = error.status === 404;
    const message = missing ? 'No such call.' : 'Cannot load this call. Retrying…';
    byId('call-state').textContent = message;
    if (!missing) window.setTimeout(() => state.view === view && openCall(sid, false), RETRY_MS);
  }
}

export function tickCall() {
  const view = state.view;
  if (view && !view.ended) {
    byId('call-duration').textContent = formatDuration(callSeconds(view.call));
  }
}
