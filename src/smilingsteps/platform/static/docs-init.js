// Starts Swagger UI on /api/v1/docs. A file of its own (not inline) so the strict
// Content-Security-Policy applies unchanged; the document's URL comes from the page.
window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.getAttribute("data-openapi-url"),
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
  });
});
