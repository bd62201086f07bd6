from mpinn.cli.app import main

raise SystemExit(main())
