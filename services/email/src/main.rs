verimail_events::service_main!(verimail_email, "email-service", "email.db", verimail_email::commands);
