// The accessibility smoke check (tests/a11y.py): returns a list of problems, empty when fine.
() => {
  const problems = [];
  const text = (el) => (el ? el.textContent.trim() : '');
  const nameOf = (el) => {
    const labelledBy = (el.getAttribute('aria-labelledby') || '').split(/\s+/).filter(Boolean);
    if (labelledBy.length) return labelledBy.map((id) => text(document.getElementById(id))).join(' ');
    if (el.getAttribute('aria-label')) return el.getAttribute('aria-label').trim();
    if (el.labels && el.labels.length) return text(el.labels[0]);
    return text(el) || (el.getAttribute('alt') || el.getAttribute('title') || '').trim();
  };
  const describe = (el) => el.outerHTML.slice(0, 100);

  if (!document.documentElement.lang) problems.push('<html> has no lang');
  if (!document.title.trim()) problems.push('the page has no title');
  if (document.querySelectorAll('h1').length !== 1) problems.push('not exactly one <h1>');
  if (!document.querySelector('main')) problems.push('no <main> landmark');

  document.querySelectorAll('.captions, [role=log]').forEach((region) => {
    if (region.getAttribute('aria-live') !== 'polite') problems.push(`caption region without aria-live=polite: ${region.id}`);
    if (!nameOf(region)) problems.push(`caption region without a name: ${region.id}`);
  });
  document.querySelectorAll('a[href], button, [role=button], [tabindex]:not([tabindex="-1"])').forEach((el) => {
    if (!nameOf(el)) problems.push(`control without a name: ${describe(el)}`);
  });
  document.querySelectorAll('img, svg, [role=img]').forEach((el) => {
    if (el.closest('[aria-hidden=true]')) return;
    if (!nameOf(el) && el.getAttribute('alt') !== '') problems.push(`image without a name: ${describe(el)}`);
  });
  document.querySelectorAll('input:not([type=hidden]), select, textarea').forEach((el) => {
    if (!nameOf(el)) problems.push(`form field without a label: ${describe(el)}`);
  });
  const ids = [...document.querySelectorAll('[id]')].map((el) => el.id);
  ids.filter((id, i) => ids.indexOf(id) !== i).forEach((id) => problems.push(`duplicate id: ${id}`));

  // Contrast of every visible piece of text against the first opaque background behind it.
  const rgb = (value) => (value.match(/[\d.]+/g) || []).map(Number);
  const luminance = ([r, g, b]) => {
    const lin = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
  };
  const background = (el) => {
    for (let node = el; node; node = node.parentElement) {
      const c = rgb(getComputedStyle(node).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] === 1)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  document.querySelectorAll('body *').forEach((el) => {
    const ownText = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    const box = el.getBoundingClientRect();
    if (!ownText || box.width <= 1 || box.height <= 1 || el.closest('[hidden]')) return;
    const style = getComputedStyle(el);
    if (style.visibility === 'hidden' || Number(style.opacity) === 0) return;
    const fg = rgb(style.color).slice(0, 3);
    const [a, b] = [luminance(fg), luminance(background(el))].sort((x, y) => y - x);
    const ratio = (a + 0.05) / (b + 0.05);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5)) problems.push(`contrast ${ratio.toFixed(2)}:1 for "${text(el).slice(0, 40)}"`);
  });
  return problems;
}
