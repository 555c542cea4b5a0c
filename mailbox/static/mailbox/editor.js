/* The rich-text editor: Tiptap (ProseMirror), as django-prose-editor ships it, on every textarea marked
   data-rich-editor. The textarea stays the form field: the editor writes its HTML there on every change and
   fires "input", so autosave and the form work unchanged.

   Pasted and dropped HTML is cleaned on the server before the page parses it (no style, script, frame or remote
   image reaches the DOM, and no CSP rule is tested); ProseMirror then keeps only what the editor's schema knows:
   paragraphs, bold, italic, underline, strike, links (http, https, mailto), lists, quotes and data: images (a
   pasted or dropped picture). The server sanitises once more when the draft is saved.
   The compose form's "Plain text / Rich text" switch turns the editor on and off. */
import {
  Blockquote, Bold, BulletList, Document, Dropcursor, Editor, Gapcursor, HardBreak, History, Image, Italic,
  Link, ListItem, Menu, OrderedList, Paragraph, Strike, Text, Underline,
} from "../django_prose_editor/editor.js";

const IMAGE_TYPES = /^image\/(png|gif|jpeg|webp)$/;
const IMAGE_MAX_BYTES = 5 * 1024 * 1024;

// Only pictures carried in the message itself: a remote image would load (and tell its sender) while writing.
const InlineImage = Image.extend({
  parseHTML() { return [{ tag: 'img[src^="data:image/"]' }]; },
}).configure({ allowBase64: true, inline: true });

function extensions() {
  return [
    Document, Paragraph, Text, HardBreak, History, Dropcursor, Gapcursor, Menu,
    Bold, Italic, Underline, Strike, BulletList, OrderedList, ListItem, Blockquote, InlineImage,
    Link.configure({ openOnClick: false, protocols: ["mailto"], HTMLAttributes: { rel: null, target: null } }),
  ];
}

/* Pasted HTML goes to the server first (mailbox.sanitize.html_for_editor: no style, script, frame or remote
   image), so the page never parses the original, which would test (and report) the page's CSP rules. */
function cleanOnServer(textarea, html) {
  const data = new FormData();
  data.set("html", html);
  const token = document.querySelector("input[name=csrfmiddlewaretoken]");
  return fetch(textarea.dataset.cleanUrl, { method: "POST", body: data, credentials: "same-origin",
    headers: { "X-CSRFToken": token ? token.value : "" } })
    .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
    .then(function (json) { return json.html; });
}

function insertTransfer(editor, textarea, transfer) {
  const html = transfer.getData("text/html");
  const text = transfer.getData("text/plain");
  const insert = function (content) { editor.chain().focus().insertContent(content).run(); };
  const asText = function () {
    insert(text.split(/\r?\n/).map(function (line) { return { type: "text", text: line }; })
      .filter(function (node) { return node.text; }));
  };
  if (!html) { asText(); return; }
  cleanOnServer(textarea, html).then(insert).catch(asText);  // no server answer: the text alone
}

function pictures(transfer) {
  return Array.from((transfer && transfer.files) || []).filter(function (f) { return IMAGE_TYPES.test(f.type); });
}

/* A pasted or dropped picture goes into the text as a data: image (sent as a cid: part of the message). */
function insertPictures(editor, files, textarea) {
  files.forEach(function (file) {
    if (file.size > IMAGE_MAX_BYTES) { window.alert(textarea.dataset.imageTooBig || "Image too large"); return; }
    const reader = new FileReader();
    reader.onload = function () { editor.chain().focus().setImage({ src: reader.result, alt: file.name }).run(); };
    reader.readAsDataURL(file);
  });
}

export function richEditor(textarea) {
  /* Pictures become data: images; HTML is cleaned on the server; plain text is left to ProseMirror. */
  function taken(event, transfer) {
    if (!transfer) return false;
    const files = pictures(transfer);
    if (files.length) { event.preventDefault(); insertPictures(editor, files, textarea); return true; }
    if (!transfer.getData("text/html") || !textarea.dataset.cleanUrl) return false;
    event.preventDefault();
    insertTransfer(editor, textarea, transfer);
    return true;
  }
  const wrapper = document.createElement("div");
  wrapper.className = "prose-editor";
  textarea.before(wrapper);
  wrapper.append(textarea);
  const editor = new Editor({
    element: wrapper,
    extensions: extensions(),
    content: textarea.value,
    injectCSS: false,  // its styles are in editor.css: an injected <style> would break the page's CSP
    editorProps: {
      attributes: { "aria-label": textarea.getAttribute("aria-label") || "" },
      // Before ProseMirror reads the clipboard (its own paste handling parses the HTML first).
      handleDOMEvents: {
        paste: function (_view, event) { return taken(event, event.clipboardData); },
        drop: function (_view, event) { return taken(event, event.dataTransfer); },
      },
    },
    onUpdate: function (props) {
      textarea.value = props.editor.isEmpty ? "" : props.editor.getHTML();
      textarea.dispatchEvent(new Event("input", { bubbles: true }));
    },
    onDestroy: function () { wrapper.before(textarea); wrapper.remove(); },
  });
  return editor;
}

function plainToHtml(text) {
  const div = document.createElement("div");
  return text.split(/\r?\n\r?\n/).map(function (para) {
    div.textContent = para;
    return "<p>" + div.innerHTML.replace(/\r?\n/g, "<br>") + "</p>";
  }).join("");
}

/* The composer: rich text or plain text, as the body_format radios say. */
function initCompose(form) {
  const html = form.querySelector("textarea[name=body_html]");
  const text = form.querySelector("textarea[name=body_text]");
  if (!html || !text) return;
  let editor = null;
  function mode() { const c = form.querySelector("input[name=body_format]:checked"); return c ? c.value : "text"; }
  function apply() {
    if (mode() === "html" && !editor) {
      if (!html.value.trim()) html.value = plainToHtml(text.value);
      editor = richEditor(html);
      text.hidden = true;
    } else if (mode() !== "html" && editor) {
      text.value = editor.getText({ blockSeparator: "\n\n" });
      editor.destroy();
      editor = null;
      html.value = "";
      text.hidden = false;
    }
  }
  if (html.value.trim()) { const r = form.querySelector("input[name=body_format][value=html]"); if (r) r.checked = true; }
  apply();
  form.addEventListener("change", function (e) {
    if (e.target.name === "body_format") { apply(); form.dispatchEvent(new Event("input", { bubbles: true })); }
  });
}

function init() {
  const compose = document.getElementById("compose-form");
  if (compose) initCompose(compose);
  document.querySelectorAll("textarea[data-rich-editor]").forEach(function (t) {
    if (!t.closest("#compose-form")) richEditor(t);
  });
}
if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init); else init();
