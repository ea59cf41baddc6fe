verimail_kit::service_main!(verimail_auth, "auth-service", "auth.db");
