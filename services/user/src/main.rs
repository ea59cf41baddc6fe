verimail_kit::service_main!(verimail_user, "user-service", "user.db");
