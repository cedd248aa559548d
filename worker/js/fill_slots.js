// Fills the slot elements of an origin's page with the runtime's own streaming HTML rewriter
// (HTMLRewriter), so the worker's bundle carries no HTML parser. `fills` is JSON from
// render::origin_fills: [{selector, attributes: [[name, value], ...], content}], each applied to
// the first element its selector matches.
export function fillSlots(response, fills) {
  let rewriter = new HTMLRewriter();
  for (const fill of JSON.parse(fills)) {
    let done = false;
    rewriter = rewriter.on(fill.selector, {
      element(el) {
        if (done) return;
        done = true;
        for (const [name, value] of fill.attributes) el.setAttribute(name, value);
        el.setInnerContent(fill.content, { html: true });
      },
    });
  }
  return rewriter.transform(response);
}
