// Progressive enhancement only: the form works without JavaScript.
(function () {
  "use strict";
  var form = document.getElementById("signup");
  if (!form) return;
  form.addEventListener("submit", function () {
    var button = document.getElementById("submit");
    if (button) {
      button.disabled = true;
      button.textContent = "Joining…";
    }
  });
})();
