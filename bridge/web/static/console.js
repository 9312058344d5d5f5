// The live console's entry point: the list of calls (refreshed every few seconds, updated in
// place) and the address's #<CallSid>, which names the open call (console/call.js).

import { CALL_ENDED, closeCall, noticeEnded, openCall, tickCall } from './console/call.js';
import {
  LOGGED_OUT,
  api,
  byId,
  callSeconds,
  el,
  formatDuration,
  formatTime,
  humanReason,
  languageName,
  setConnection,
  state,
} from './console/common.js';

const LIST_REFRESH_MS = 3000;
const LIST_LIMIT = 30;
const SID = /^[A-Za-z0-9]{1,64}$/; // what the API accepts as a call SID

function callItem(sid) {
  const li = el('li');
  li.dataset.sid = sid;
  const link = el('a', 'call-link');
  link.href = `#${sid}`;
  link.dataset.sid = sid;
  link.append(el('span', 'number'), el('span', 'badge'), el('span', 'meta'));
  li.append(link);
  return li;
}

function fillItem(li, call) {
  const link = li.firstChild;
  const [number, badge, meta] = link.children;
  number.textContent = call.caller_number || 'Unknown caller';
  badge.textContent = call.active ? 'Live' : 'Ended';
  badge.className = call.active ? 'badge live' : 'badge ended';
  const caller = languageName(call.caller_language);
  const languages = `${caller} → ${languageName(call.agent_language)}`;
  const when = call.active ? `since ${formatTime(call.started_at)}` : humanReason(call.end_reason);
  meta.textContent = `${languages} · ${formatDuration(callSeconds(call))} · ${when}`;
  if (state.view && state.view.sid === call.call_sid) link.setAttribute('aria-current', 'true');
  else link.removeAttribute('aria-current');
}

// Updates a list in place, so a keyboard user's focus on a call survives each refresh.
function syncList(list, calls) {
  const existing = new Map([...list.children].map((li) => [li.dataset.sid, li]));
  calls.forEach((call, index) => {
    const li = existing.get(call.call_sid) || callItem(call.call_sid);
    existing.delete(call.call_sid);
    fillItem(li, call);
    if (list.children[index] !== li) list.insertBefore(li, list.children[index] || null);
  });
  existing.forEach((li) => li.remove());
}

function renderList(calls) {
  const focused = document.activeElement;
  const focusedSid = focused && focused.dataset ? focused.dataset.sid : undefined;
  state.calls = new Map(calls.map((call) => [call.call_sid, call]));
  const active = calls.filter((call) => call.active);
  const recent = calls.filter((call) => !call.active);
  syncList(byId('active-calls'), active);
  syncList(byId('recent-calls'), recent);
  byId('active-empty').hidden = active.length > 0;
  byId('recent-empty').hidden = recent.length > 0;
  if (focusedSid && document.activeElement === document.body) {
    // The call moved between the lists (it ended): keep the focus on it.
    const link = document.querySelector(`a.call-link[data-sid="${CSS.escape(focusedSid)}"]`);
    if (link) link.focus();
  }
  const open = state.view ? state.calls.get(state.view.sid) : undefined;
  if (open && !open.active) noticeEnded();
}

async function refreshList() {
  try {
    const data = await api(`/api/calls?limit=${LIST_LIMIT}`);
    renderList(data.calls || []);
    const view = state.view;
    if (!view || view.ended) setConnection('Up to date.');
    else if (view.live) setConnection('Following the call live.'); // else: the stream's own news
  } catch (error) {
    if (error.message !== LOGGED_OUT) setConnection('Cannot reach the bridge. Retrying…');
  }
}

function openFromHash(moveFocus) {
  let sid = '';
  try {
    sid = decodeURIComponent(window.location.hash.slice(1));
  } catch (error) {
    sid = ''; // a mangled address opens nothing
  }
  if (!SID.test(sid)) closeCall();
  else if (!state.view || state.view.sid !== sid) openCall(sid, moveFocus);
}

function tick() {
  tickCall();
  document.querySelectorAll('#active-calls > li').forEach((li) => {
    const call = state.calls.get(li.dataset.sid);
    if (call) fillItem(li, call);
  });
}

async function init() {
  try {
    state.languages = await api('/console/languages.json');
  } catch (error) {
    state.languages = {}; // codes are shown instead of names
  }
  await refreshList();
  window.setInterval(refreshList, LIST_REFRESH_MS);
  window.setInterval(tick, 1000);
  document.addEventListener(CALL_ENDED, refreshList);
  window.addEventListener('hashchange', () => openFromHash(true));
  openFromHash(false);
}

init();
