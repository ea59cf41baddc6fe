// With JavaScript the confirmation form submits itself; without it, the button does.
document.getElementById("verify").submit();
