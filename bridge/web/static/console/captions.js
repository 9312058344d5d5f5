// The two caption columns. A line holds one utterance: what was said and its translation.
// Fragments extend the open line of their direction as they stream in; a closed segment (the
// bridge's word on what the utterance was) replaces the line's text and makes it final.

import { DIRECTIONS, byId, directionLanguages, el } from './common.js';

const NEAR_BOTTOM_PX = 48;

function column(direction) {
  return byId(`captions-${direction}`);
}

// Keeps a column scrolled to its newest line, unless the reader has scrolled up to reread.
function followingTail(list, change) {
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < NEAR_BOTTOM_PX;
  const result = change();
  if (atBottom) list.scrollTop = list.scrollHeight;
  return result;
}

function captionText(className, label, language) {
  const paragraph = el('p', className);
  const tag = el('span', 'tag', (language || '?').toUpperCase());
  tag.setAttribute('aria-hidden', 'true'); // the hidden label below says it in words
  const text = el('span', 'text');
  if (language) text.lang = language; // screen readers pronounce each line in its language
  paragraph.append(tag, el('span', 'visually-hidden', `${label}: `), text);
  return { paragraph, text };
}

function setLine(line, source, translation) {
  line.src.textContent = source;
  line.tr.textContent = translation;
  line.src.parentNode.hidden = !source; // e.g. transcription turned off: translation only
  line.tr.parentNode.hidden = !translation && !!source;
}

function addLine(view, direction, source, translation, final) {
  const [from, to] = directionLanguages(view.call, direction);
  const li = el('li', final ? 'line' : 'line open');
  // A line still being spoken is busy: screen readers read it once, when it is complete.
  if (!final) li.setAttribute('aria-busy', 'true');
  const src = captionText('source', 'Said', from);
  const tr = captionText('translation', 'Translation', to);
  li.append(src.paragraph, tr.paragraph);
  const line = { li, src: src.text, tr: tr.text };
  setLine(line, source, translation);
  followingTail(column(direction), () => column(direction).append(li));
  return line;
}

export function finalise(line) {
  line.li.classList.remove('open');
  line.li.removeAttribute('aria-busy');
}

export function clearCaptions(view) {
  view.lines = {};
  view.lastSeq = {};
  DIRECTIONS.forEach((direction) => column(direction).replaceChildren());
}

export function onFragment(view, fragment) {
  const direction = fragment.direction;
  if (!DIRECTIONS.includes(direction)) return;
  if (!view.lines[direction]) view.lines[direction] = addLine(view, direction, '', '', false);
  const line = view.lines[direction];
  const source = line.src.textContent + (fragment.kind === 'source' ? fragment.text : '');
  const translation = line.tr.textContent + (fragment.kind === 'translation' ? fragment.text : '');
  followingTail(column(direction), () => setLine(line, source, translation));
}

export function onSegment(view, segment) {
  const direction = segment.direction;
  if (!DIRECTIONS.includes(direction) || segment.seq <= (view.lastSeq[direction] ?? -1)) return;
  view.lastSeq[direction] = segment.seq;
  const source = segment.source_text || '';
  const translation = segment.translated_text || '';
  const line = view.lines[direction];
  view.lines[direction] = null;
  if (!line) {
    addLine(view, direction, source, translation, true);
    return;
  }
  // Fragments of the next utterance may already have arrived: carry them to a new line.
  const rest = (now, closed) => (now.startsWith(closed) ? now.slice(closed.length) : '');
  const restSource = rest(line.src.textContent, source);
  const restTranslation = rest(line.tr.textContent, translation);
  setLine(line, source, translation);
  finalise(line);
  if ((restSource + restTranslation).trim()) {
    view.lines[direction] = addLine(view, direction, restSource, restTranslation, false);
  }
}
