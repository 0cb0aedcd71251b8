from syncline.cli.main import main

raise SystemExit(main())
