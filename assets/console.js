// The console's own script, kept to what a server-rendered page cannot do: copy a URI to the
// clipboard. Everything else works without it (and htmx only keeps statuses current).
document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (!source) return;
  const done = (text) => { button.textContent = text; };
  if (!navigator.clipboard) { done("Select the URI to copy it"); return; }
  navigator.clipboard.writeText(source.textContent.trim()).then(() => done("Copied"), () => done("Select the URI to copy it"));
});
