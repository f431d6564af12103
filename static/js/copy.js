// Buttons with data-copy="<selector>" copy that field's value to the clipboard.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const field = document.querySelector(button.dataset.copy);
  if (!field) return;
  field.select();
  try {
    await navigator.clipboard.writeText(field.value);
    button.textContent = "Copied";
  } catch (error) {
    button.textContent = "Press Ctrl+C";  // no clipboard permission: the text stays selected
  }
});
