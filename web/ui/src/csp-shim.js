// The console's CSP allows styles from 'self' only (no 'unsafe-inline').
// xterm.js writes dynamic CSS into <style> elements and `style` attributes,
// which that policy refuses. This shim routes both through the CSSOM, which
// CSP does not govern:
//  * document.createElement('style') returns a <postern-style> element whose
//    text becomes a constructable stylesheet adopted by the document;
//  * setAttribute('style', text) sets element.style.cssText instead.
// Loaded only with the terminal screens.

class PosternStyle extends HTMLElement {
  constructor() {
    super();
    this._sheet = new CSSStyleSheet();
    this._text = '';
  }
  connectedCallback() {
    if (!document.adoptedStyleSheets.includes(this._sheet)) {
      document.adoptedStyleSheets = [...document.adoptedStyleSheets, this._sheet];
    }
  }
  disconnectedCallback() {
    document.adoptedStyleSheets = document.adoptedStyleSheets.filter((s) => s !== this._sheet);
  }
  get textContent() {
    return this._text;
  }
  set textContent(v) {
    this._text = String(v ?? '');
    this._sheet.replaceSync(this._text);
  }
}

if (!customElements.get('postern-style')) {
  customElements.define('postern-style', PosternStyle);
  const createElement = Document.prototype.createElement;
  Document.prototype.createElement = function (tag, options) {
    if (String(tag).toLowerCase() === 'style') return createElement.call(this, 'postern-style');
    return createElement.call(this, tag, options);
  };
  const setAttribute = Element.prototype.setAttribute;
  Element.prototype.setAttribute = function (name, value) {
    if (String(name).toLowerCase() === 'style' && this.style) {
      this.style.cssText = String(value);
      return;
    }
    return setAttribute.call(this, name, value);
  };
}
