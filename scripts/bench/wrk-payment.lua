-- wrk script: POST the README's example payment (one payer, as a first load test does).
-- wrk -t2 -c64 -d10s -s scripts/bench/wrk-payment.lua http://localhost:5000/payments
-- Set API_KEY in the environment (the key the API was started with).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = os.getenv("API_KEY") or "demo-key-change-me-0123456789"
wrk.body = '{"amount": 70.5, "currency": "USD", ' ..
  '"userId": "6f1c0c8e-5b0e-4d8e-9f3a-2b7d1c9e4a10", ' ..
  '"payeeId": "1b2c3d4e-5f60-4a1b-8c2d-3e4f5a6b7c8d", ' ..
  '"paymentMethodId": "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d"}'

