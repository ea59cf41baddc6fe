verimail_kit::service_main!(verimail_email, "email-service", "email.db");
